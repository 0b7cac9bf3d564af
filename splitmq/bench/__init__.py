"""Every benchmark of splitmq, one module each; the CLI wiring lives in `splitmq.commands`."""
