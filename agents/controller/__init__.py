"""The deployment controller: its agent, the command handler, issuers and keys, the
retrain hook, the verdict endpoint and the model registries."""
