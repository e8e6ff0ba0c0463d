"""The runtime every agent runs on: the runner, redo records, batches, and the Faust
internals behind one module."""
