"""Policy decisions: pure functions from reports and policy to commands.

``decide`` (the policy agent's brain), ``transition`` (what the deployment
controller may do to a model's state), command ids and signatures, and the
hash chain of deployment events. No Kafka, no clock: time is event time taken
from the reports, so a replay makes the same decisions.
"""
