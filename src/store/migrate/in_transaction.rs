//! refinery's runner, driven inside a transaction that `migrate` owns.
//!
//! refinery's own tokio-postgres driver opens and commits a transaction per
//! step (the history table, the applied list, the migrations). Adoption has
//! to run its own steps between migrations, and a dry run has to roll all of
//! it back, so every statement refinery issues goes into one transaction of
//! ours instead: nothing is committed until `migrate` commits.

use refinery_core::{
    traits::r#async::{AsyncMigrate, AsyncQuery, AsyncTransaction},
    Migration,
};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use tokio_postgres::Transaction;

pub(super) struct InTransaction<'a, 'b>(pub(super) &'a Transaction<'b>);

impl AsyncTransaction for InTransaction<'_, '_> {
    type Error = tokio_postgres::Error;

    async fn execute<'q, T: Iterator<Item = &'q str> + Send + 'q>(
        &'q mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut count = 0;
        for query in queries {
            self.0.batch_execute(query).await?;
            count += 1;
        }
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for InTransaction<'_, '_> {
    async fn query<'q>(&'q mut self, query: &'q str) -> Result<Vec<Migration>, Self::Error> {
        let rows = self.0.query_typed(query, &[]).await?;
        Ok(rows
            .iter()
            .map(|row| {
                // refinery writes applied_on as RFC 3339 and the checksum as
                // a decimal u64; anything else is not its history table
                let applied_on: String = row.get(2);
                let checksum: String = row.get(3);
                Migration::applied(
                    row.get(0),
                    row.get(1),
                    OffsetDateTime::parse(&applied_on, &Rfc3339)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    checksum.parse().unwrap_or_default(),
                )
            })
            .collect())
    }
}

impl AsyncMigrate for InTransaction<'_, '_> {}
