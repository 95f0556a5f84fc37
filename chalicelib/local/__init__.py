"""The local runtime of `make dev`: the server (`server`) and the dispatcher that fires due
tasks in-process with its worker pool (`dispatcher`). Nothing here runs in Lambda."""
