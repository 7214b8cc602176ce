"""The program: options, one run, the training engine, the experiment recorder and the final report."""
