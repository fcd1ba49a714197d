"""KFP pipeline definitions, the runner, and the ``mlcycle`` CLI."""
