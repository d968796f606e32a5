public enum TelexArchiveModule {}
