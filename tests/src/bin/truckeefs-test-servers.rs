//! Starts the production servers of the test harness — a private MariaDB and a Tahoe-LAFS grid
//! (introducer and one storage node, 1-of-1) on loopback — for scripts that mount with them
//! (`scripts/pjdfstest.sh` with `PJDFSTEST_BACKENDS=production`).
//!
//! Usage: truckeefs-test-servers CONFIG.yaml [FLAT|MIRROR]
//!
//! Writes a mount configuration (`truckeefs mount -c CONFIG.yaml`: a fresh rootcap, a fresh
//! database, the strategy given, FLAT by default) with mode 0600, prints `ready` on stdout, and
//! runs until its standard input closes; then stops the servers and removes their directories.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use truckeefs_tests::mariadb::MariaDb;
use truckeefs_tests::tahoe_grid::TahoeGrid;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, strategy) = match args.as_slice() {
        [c] => (c.clone(), "FLAT".to_string()),
        [c, s] if s == "FLAT" || s == "MIRROR" => (c.clone(), s.clone()),
        _ => {
            eprintln!("usage: truckeefs-test-servers CONFIG.yaml [FLAT|MIRROR]");
            std::process::exit(2);
        }
    };
    let db = MariaDb::start();
    let grid = TahoeGrid::start();
    let yaml = format!(
        "# made by truckeefs-test-servers\n{}backend_storage_strategy: {strategy}\n",
        truckeefs_tests::production_yaml(&grid, &db, &db.unique_db_name("servers"))
    );
    let written = std::fs::write(&config, yaml)
        .and_then(|()| std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)));
    if let Err(e) = written {
        eprintln!("truckeefs-test-servers: cannot write {config}: {e}");
        grid.stop();
        std::process::exit(1);
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    grid.stop();
    drop(db);
}
