import Testing

@Suite struct TelexArchivePlaceholder { @Test func builds() {} }
