/* SPDX-License-Identifier: Apache-2.0 */
/*
 * emberd's database connection: SQLite (a file, WAL mode) or PostgreSQL
 * (libpq), behind one small interface. Statements are written once, in SQL
 * both accept, with `?` placeholders; for PostgreSQL they become $1, $2...
 * Every parameter and every result cell travels as text (NULL for SQL
 * NULL): SQLite's column affinity and PostgreSQL's parameter type inference
 * turn them into the column's type.
 *
 * One connection, guarded by one recursive lock: a statement or a whole
 * transaction (db_begin ... db_commit) runs alone. Errors are logged here,
 * once, with the database's message; functions return 0 or -errno.
 */
#ifndef EMBERD_DB_H
#define EMBERD_DB_H

#include <stdbool.h>
#include <stddef.h>

enum db_kind { DB_SQLITE, DB_POSTGRES };

struct db;

struct db_rows {
	int nrows, ncols;
	char **cells;		/* nrows * ncols, row-major; NULL for NULL */
};

/* spec: "postgres://..." or "postgresql://..." for PostgreSQL, otherwise
 * the path of an SQLite file (created if missing). */
int db_open(const char *spec, struct db **out);
void db_close(struct db *db);
enum db_kind db_kind(const struct db *db);

/* Brings the schema to the latest version; running it again changes
 * nothing. *applied (optional) gets how many migrations it ran. */
int db_migrate(struct db *db, int *applied);
int db_schema_version(struct db *db);

/* Runs a statement; *changes (optional) gets the rows it changed. */
int db_exec(struct db *db, const char *sql, int nparams,
	    const char *const *params, long *changes);
/* Runs a query; free the rows with db_rows_free. */
int db_query(struct db *db, const char *sql, int nparams,
	     const char *const *params, struct db_rows **out);
void db_rows_free(struct db_rows *rows);
const char *db_cell(const struct db_rows *rows, int row, int col);

/* A transaction: db_begin holds the connection until db_commit or
 * db_rollback. Nested calls are not supported. */
int db_begin(struct db *db);
int db_commit(struct db *db);
void db_rollback(struct db *db);

#endif
