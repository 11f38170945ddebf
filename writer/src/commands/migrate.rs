//! `writer migrate`: apply pending migrations, under the writer lock (it waits while a
//! writer holds it: a running writer must be stopped first, see docs/writer.md).

use crate::cli::DatabaseArgs;

/// Applies the migrations to the primary.
pub async fn run(args: &DatabaseArgs) -> anyhow::Result<()> {
    let shutdown = shared::shutdown::stop_token()?;
    let applied = crate::db::migrate_when_unlocked(&args.database_url, &shutdown, || {
        eprintln!(
            "migrations are pending and a writer holds the writer lock: waiting until it stops \
             (stop the running `writer run` to upgrade)"
        )
    })
    .await?;
    println!("{applied} migration(s) applied");
    Ok(())
}
