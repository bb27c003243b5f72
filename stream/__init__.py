"""Stream stage: the Faust worker that turns click events into fresh interest vectors in Redis."""
