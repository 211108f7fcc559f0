"""The one door to AWS: the only package that imports boto3.

It is cut by audience, so that what each caller may do reads like its IAM policy:
`client` (the connection, calls with user-facing wording, paging, errors, `Instance`),
`hub` (what the hub does: describe, guard, launch, start, stop, home volumes; no delete),
`admin` (the launcher, teardown and preflight: groups, images, key pairs, guarded deletes)
and `local` (what only the local cloud needs: VPCs, subnets, public images, profiles).
"""
