"""An AWS behaviour layer for the local cloud (`cloudjhub demo --like-aws`).

moto and the fleet emulator are kinder than AWS: states change at once, the
console shows everything at once, nothing is throttled, private IPs are never
reused. This package puts AWS's documented behaviour back, each rule in its own
module with its source cited: `buckets` (throttling), `lifecycle` (state
durations), `console` (GetConsoleOutput), `faults` (opt-in failures),
`idempotency` (ClientToken), `ipreuse` (moto's private IPs), `modifications`
(EBS ModifyVolume), `efs_creating` (EFS's `creating` states), and `in_moto`,
what is installed in the embedded moto rather than the proxy (with the DLM
stand-in's refusal of a role IAM has not spread yet).

It works as a small HTTP proxy in front of any EC2 Query endpoint (`proxy`),
so the same behaviour applies to the in-process moto and to an outside
`--aws-endpoint`, and every client (hub, launcher, scripts) sees it without
knowing. Only what `in_moto` installs needs moto in this process.
"""
