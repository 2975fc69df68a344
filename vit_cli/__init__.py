"""The `vit` command line: one entry point (main), a module per subcommand. Each parses its arguments, calls a
library function (train, twins, vit_figures, vit_bench, vit_spec.formats) and prints; the work is the libraries'."""
