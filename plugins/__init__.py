"""octbench's built-in techniques: ordinary plugins, registered through the ``octbench`` entry-point group."""
