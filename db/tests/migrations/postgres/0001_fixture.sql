-- A crate's first migration, as the tests of lariat-db apply it.
CREATE TABLE fixture (id BIGINT PRIMARY KEY, note TEXT NOT NULL);
