"""An example octbench plugin package."""
