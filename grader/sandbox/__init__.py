"""Running submitted code: the bubblewrap sandbox (launch) and what runs inside it (server)."""
