//! `writer gaps`: which ledgers are missing.

use anyhow::Context as _;

use crate::cli::GapsArgs;

/// Prints each missing range, one a line, or that there is none.
pub async fn run(args: &GapsArgs) -> anyhow::Result<()> {
    let pool = crate::db::pool(&args.database.database_url, 1)?;
    let client = pool.get().await.context("database")?;
    let bounds = client
        .query_one("SELECT min(sequence), max(sequence) FROM ledgers", &[])
        .await
        .context("reading the stored range")?;
    let (Some(min), Some(max)) = (
        bounds.get::<_, Option<i32>>(0),
        bounds.get::<_, Option<i32>>(1),
    ) else {
        println!("no ledgers stored");
        return Ok(());
    };
    let from = args.from.unwrap_or(min as u32);
    let to = args.to.unwrap_or(max as u32);
    let gaps = crate::store::gaps(&**client, from, to)
        .await
        .context("finding gaps")?;
    if gaps.is_empty() {
        println!("no gaps between {from} and {to}");
    }
    for (start, end) in gaps {
        println!("{start}-{end} ({} ledgers missing)", end - start + 1);
    }
    Ok(())
}
