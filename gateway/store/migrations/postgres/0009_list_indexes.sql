-- GET /users?order_by=created_at (and keyset pagination's next page by it) reads down this index from the cursor,
-- rather than sorting every user of the instance (store/queries.py list_users, _past).
CREATE INDEX users_created ON users (created_at, id);
