import Testing

@Suite struct TelexS3Placeholder { @Test func builds() {} }
