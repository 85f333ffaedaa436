"""The HTML report, rendered from the results store alone."""
