//! `writer migrate`: apply pending migrations.

use crate::cli::DatabaseArgs;

/// Applies the migrations to the primary.
pub async fn run(args: &DatabaseArgs) -> anyhow::Result<()> {
    let pool = crate::db::pool(&args.database_url, 1)?;
    let applied = crate::db::migrate(&pool).await?;
    println!("{applied} migration(s) applied");
    Ok(())
}
