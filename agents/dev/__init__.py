"""Development tools: the embedded broker, the simulator, the demo and the benches."""
