-- A table for pg-kit's migration tests.
CREATE TABLE probe (id integer PRIMARY KEY, note text NOT NULL DEFAULT '');
