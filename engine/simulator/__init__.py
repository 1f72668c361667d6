"""Protocol-faithful local peers: a simulated OpenAI Realtime model and (with the call
bridge) a simulated Twilio: its caller, and the REST API that transfers a live call.
They are part of the product: the embedded default when no accounts are configured, and
what the tests and benchmarks talk to."""
