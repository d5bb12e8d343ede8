//! The `[[feeds]]` examples in docs/feeds.md parse and validate, so the
//! guide cannot drift from the config.

use serde::Deserialize;
use tickwire_feed::{FeedConfig, validate_feeds};

#[derive(Deserialize)]
struct File {
    feeds: Vec<FeedConfig>,
}

#[test]
fn every_toml_example_in_the_feeds_guide_is_a_valid_config() {
    let guide = include_str!("../../../docs/feeds.md");
    let mut blocks = 0;
    for block in guide.split("```toml\n").skip(1) {
        let toml_text = block.split("```").next().unwrap();
        let file: File = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
        validate_feeds(&file.feeds).unwrap_or_else(|e| panic!("{e}\n{toml_text}"));
        blocks += 1;
    }
    assert_eq!(blocks, 4, "one example per kind");
}
