"""What an action needs while it runs, wherever it runs: context, progress, logging."""
