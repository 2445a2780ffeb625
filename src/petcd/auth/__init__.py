"""Authentication and authorization, as etcd's v3 auth: users with bcrypt passwords,
roles with key permissions (READ/WRITE/READWRITE on a key, a range, a prefix or every
key from one on), the `root` user and role, an enabled flag and an auth revision that
moves on every change. State changes only by applying log entries (`apply`, `store`);
`checks` says what a request needs, `tokens` issues and verifies tokens, `login`
hashes and checks passwords and slows down guessing."""
