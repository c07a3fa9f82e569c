"""Session operations: reads, writes per write mode, compaction, admin and transfer."""
