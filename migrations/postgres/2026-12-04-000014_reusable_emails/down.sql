DROP INDEX users_email_live;
CREATE UNIQUE INDEX users_email ON users (email);
