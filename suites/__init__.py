"""The suites octbench ships: `octbench run NAME` runs one by name, `octbench init` copies them."""
