public enum TelexS3 {}
