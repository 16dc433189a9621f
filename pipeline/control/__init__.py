"""The live service's control plane: one command handler (:mod:`.commands`) behind the Redis control stream
(:mod:`.redis`) and the HTTP API (:mod:`.http`). Every command is validated before it is answered; what
reaches the runner can neither stop a stream nor open anything the operator did not allow."""
