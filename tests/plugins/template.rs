//! `builtin:default`, the template plugin: rendering, filters and SMS segments.

use herald::plugin::template::{Encoding, TemplatePlugin};
use herald::plugin::{PluginIdentity, PluginLimits, PluginRuntime, builtin};

async fn plugin() -> TemplatePlugin {
    let runtime =
        PluginRuntime::new(PluginLimits::default(), Some(&herald_tests::plugin_code_cache())).expect("runtime");
    let identity = PluginIdentity {
        name: "default".into(),
        settings: Default::default(),
    };
    TemplatePlugin::load(&runtime, identity, &builtin::resolve("builtin:default").unwrap())
        .await
        .expect("loads")
}

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn renders_placeholders_and_filters() {
    let plugin = plugin().await;
    let cases = [
        ("Hi {{name}}!", vec![("name", "Ada")], "Hi Ada!"),
        ("Hi {{ first_name | default:\"there\" }}", vec![], "Hi there"),
        ("{{ name | upper }}", vec![("name", "ada")], "ADA"),
        ("{{ name | lower }}", vec![("name", "ADA")], "ada"),
        (
            "Dear {{ name | first_word }}",
            vec![("name", "Ada Lovelace")],
            "Dear Ada",
        ),
        ("{{ city | default:\"nowhere\" | upper }}", vec![], "NOWHERE"),
    ];
    for (template, variables, expected) in cases {
        let rendered = plugin.render(template, &vars(&variables)).await.unwrap().unwrap();
        assert_eq!(rendered.body, expected, "{template}");
    }
    let missing = plugin.render("Hi {{city}}", &[]).await.unwrap();
    assert!(missing.is_err(), "a missing variable without default is an error");
    assert!(plugin.validate("Hi {{name").await.unwrap().is_err());
    assert!(
        plugin.validate("Hi {{ name | shout }}").await.unwrap().is_err(),
        "unknown filter"
    );
    assert!(plugin.validate("Hi {{ name }}").await.unwrap().is_ok());
}

#[tokio::test]
async fn counts_segments_like_carriers_do() {
    let plugin = plugin().await;
    let cases: Vec<(String, Encoding, u32)> = vec![
        ("a".repeat(160), Encoding::Gsm7, 1),
        ("a".repeat(161), Encoding::Gsm7, 2),
        ("a".repeat(306), Encoding::Gsm7, 2),
        ("a".repeat(307), Encoding::Gsm7, 3),
        // Extension characters take two septets each.
        (format!("{}€", "a".repeat(158)), Encoding::Gsm7, 1),
        (format!("{}€", "a".repeat(159)), Encoding::Gsm7, 2),
        ("{}[]~|^\\".repeat(10), Encoding::Gsm7, 1),
        ("é".repeat(160), Encoding::Gsm7, 1),
        // Anything outside GSM-7 switches the whole message to UCS-2.
        (format!("{}ł", "a".repeat(69)), Encoding::Ucs2, 1),
        (format!("{}ł", "a".repeat(70)), Encoding::Ucs2, 2),
        ("ł".repeat(134), Encoding::Ucs2, 2),
        ("ł".repeat(135), Encoding::Ucs2, 3),
        // An emoji is two UTF-16 code units.
        ("😀".repeat(35), Encoding::Ucs2, 1),
        ("😀".repeat(36), Encoding::Ucs2, 2),
    ];
    for (body, encoding, segments) in cases {
        let rendered = match plugin.render(&body, &[]).await.unwrap() {
            Ok(rendered) => rendered,
            Err(e) => panic!("{body:?}: {e:?}"),
        };
        assert_eq!((rendered.encoding, rendered.segments), (encoding, segments), "{body:?}");
    }
}
