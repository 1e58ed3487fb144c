use std::sync::atomic::Ordering;

use super::*;
use crate::routing::cache::test_support::*;

fn copy_of(cache: &RouteCache<Table>) -> Snapshot {
    cache.last_known_good(Some(42))
}

#[tokio::test]
async fn a_copy_written_and_read_back_serves_its_routes_while_the_source_is_down() {
    let cache = cache_over(Some("Reception"), None, settings());
    cache.resolve(&number()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &copy_of(&cache)).unwrap();

    let copy = read(dir.path()).unwrap().expect("a copy");
    assert_eq!(copy.change_id, Some(42));
    assert_eq!(copy.numbers(), 1);
    // a new replica, its database down from the start
    let restarted = cache_over(None, None, settings());
    restarted.set_confirmed(false);
    restarted.inner().down.store(true, Ordering::SeqCst);
    assert_eq!(restarted.restore(copy).await, 1);
    let route = restarted.resolve(&number()).await.unwrap().unwrap();
    assert_eq!(route.agent.name, "Reception");
    // a number it never held: the source's error
    let other = E164::from_canonical("+14155550199").unwrap();
    assert!(restarted.resolve(&other).await.is_err());
}

#[tokio::test]
async fn restored_routes_keep_their_age_and_none_older_than_the_maximum_is_served() {
    let cache = cache_over(Some("Reception"), None, settings());
    cache.resolve(&number()).await.unwrap();
    let mut copy = copy_of(&cache);
    // read from the database an hour ago, past the ten minutes allowed
    for saved in &mut copy.numbers {
        saved.read_at_ms -= 3_600_000;
    }
    let restarted = cache_over(None, None, settings());
    restarted.inner().down.store(true, Ordering::SeqCst);
    assert_eq!(restarted.restore(copy).await, 0);
    assert!(restarted.resolve(&number()).await.is_err());
}

#[test]
fn a_torn_corrupt_or_foreign_file_is_set_aside_not_used() {
    let cache = cache_over(Some("Reception"), None, settings());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    type Damage = fn(&mut Vec<u8>);
    let damages: [(&str, Damage); 4] = [
        ("torn", |bytes| bytes.truncate(bytes.len() - 3)),
        ("flipped", |bytes| {
            let last = bytes.len() - 1;
            bytes[last] ^= 0x40;
        }),
        ("another version", |bytes| bytes[7] = b'9'),
        ("empty", |bytes| bytes.clear()),
    ];
    for (damage, apply) in damages {
        write(dir.path(), &copy_of(&cache)).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        apply(&mut bytes);
        fs::write(&path, bytes).unwrap();
        let error = read(dir.path()).expect_err(damage);
        assert!(
            matches!(error, SnapshotError::Unusable { .. }),
            "{damage}: {error}"
        );
        assert!(!path.exists(), "{damage}: not read again");
        assert!(dir.path().join(format!("{FILE_NAME}.corrupt")).exists());
    }
    // and no file at all is no copy
    assert!(read(dir.path()).unwrap().is_none());
}

#[test]
fn a_write_replaces_the_last_copy_whole() {
    let cache = cache_over(Some("Reception"), None, settings());
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), &cache.last_known_good(Some(1))).unwrap();
    write(dir.path(), &cache.last_known_good(Some(2))).unwrap();
    assert_eq!(read(dir.path()).unwrap().unwrap().change_id, Some(2));
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [FILE_NAME], "no temporary file left");
}
