"""Kubernetes Events: `sink` queues and writes them (on `agent.output.delivery`), `body`
builds one Event from a container's findings for a rule."""
