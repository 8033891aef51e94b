"""The training methods, one module each (trainer.algorithms.base: Options, Method, the registry); trainer.config
imports every module of this package, so a module here that registers a Method is a `trainer run` subcommand."""
