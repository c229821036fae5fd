"""What every job uses to leave its record: notebook runs (papermill, scraps) and alerts."""
