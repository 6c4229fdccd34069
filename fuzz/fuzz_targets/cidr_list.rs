//! A CIDR list that parses writes back to one that parses to the same networks, and every
//! network contains its own address.
#![no_main]
use finch_config::auth::parse_networks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let list: Vec<String> = text.split(',').map(str::to_owned).collect();
    if let Ok(nets) = parse_networks(&list) {
        let written: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        let again = parse_networks(&written).expect("written networks parse");
        assert_eq!(again, nets);
        for (n, s) in nets.iter().zip(&written) {
            let addr: std::net::IpAddr = s.split('/').next().unwrap().parse().unwrap();
            assert!(n.contains(addr), "{s}");
        }
    }
});
