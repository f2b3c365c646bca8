"""Where an experiment runs: local processes or Ray actors, behind one experiment flow."""
