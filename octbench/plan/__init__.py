"""Stage 2 of a run (suite -> **plan** -> cells -> store -> report): from a validated suite to everything checked
and the cells to run. ``run`` builds a run's plan (``plan_run``); ``check`` checks plugin references and keys each
cell's result (``config_hash``); ``dependencies`` says what a cell depends on; ``folds`` assigns the paired folds;
``preflight`` tries every variant's pipeline on a sample (``octbench check``)."""
