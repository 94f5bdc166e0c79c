"""Policy reports (openreports.io or wgpolicyk8s.io), one per audited Pod (README: Policy
reports): `discovery` picks the API the cluster serves, `body` builds a Pod's report, and
`sink` queues and writes them (on `agent.output.delivery`)."""
