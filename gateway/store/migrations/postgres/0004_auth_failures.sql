-- Failed authentications per client address (gateway/bruteforce.py), shared by every worker and replica so that an
-- attacker gets the limit once, not once per process. One row per address: a failure upserts it, a success deletes
-- it, a ban sets banned_until. Rows of addresses that stopped failing are pruned once their window is over.
-- Same meaning as sqlite/0004.
CREATE TABLE auth_failures (
    address       text PRIMARY KEY,       -- the client address (an IPv6 client: its /64)
    failures      integer NOT NULL,       -- failures since window_start
    window_start  timestamptz NOT NULL,   -- first failure of the current window (bruteforce.find_time)
    updated_at    timestamptz NOT NULL,   -- the last failure or ban: what each process reads incrementally
    banned_until  timestamptz             -- NULL unless banned
);
CREATE INDEX auth_failures_updated ON auth_failures (updated_at);
CREATE INDEX auth_failures_banned ON auth_failures (banned_until) WHERE banned_until IS NOT NULL;
