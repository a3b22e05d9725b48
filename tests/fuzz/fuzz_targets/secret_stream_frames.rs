//! secret-stream's receive path on arbitrary bytes: the uint24 frame splitter, the header
//! check and message decryption for an established session, and the Noise responder's
//! first two handshake reads. Nothing may panic.
#![no_main]

use std::sync::OnceLock;

use intercom_secret_stream::framing::{FrameDecoder, MAX_FRAME};
use intercom_secret_stream::{Decryptor, Encryptor, Handshake, HandshakeResult, KeyPair, Pattern};
use libfuzzer_sys::fuzz_target;

fn session() -> &'static (HandshakeResult, HandshakeResult) {
    static S: OnceLock<(HandshakeResult, HandshakeResult)> = OnceLock::new();
    S.get_or_init(|| {
        let mut i = Handshake::new(Pattern::XX, true, KeyPair::from_seed(&[1; 32]), &[], None).unwrap();
        let mut r = Handshake::new(Pattern::XX, false, KeyPair::from_seed(&[2; 32]), &[], None).unwrap();
        let m = i.send(&[]).unwrap();
        r.recv(&m).unwrap();
        let m = r.send(&[]).unwrap();
        i.recv(&m).unwrap();
        let m = i.send(&[]).unwrap();
        r.recv(&m).unwrap();
        (i.result().unwrap().clone(), r.result().unwrap().clone())
    })
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = session();
    let mut frames = FrameDecoder::new(MAX_FRAME);
    frames.push(data);
    let mut dec = Decryptor::new(b);
    // Half the time start from a genuine header so the decryption path is reached.
    if data.first().is_some_and(|x| x & 1 == 1) {
        let (_, header) = Encryptor::new(a);
        let _ = dec.handle_frame(&header[3..]);
    }
    while let Ok(Some(body)) = frames.next_frame() {
        if dec.handle_frame(&body).is_err() {
            break;
        }
    }
    for pattern in [Pattern::XX, Pattern::IK] {
        let mut r = Handshake::new(pattern, false, KeyPair::from_seed(&[2; 32]), &[], None).unwrap();
        if r.recv(data).is_ok() {
            let _ = r.send(&[]);
        }
        let mut i = Handshake::new(pattern, true, KeyPair::from_seed(&[1; 32]), &[], Some(a.remote_public_key)).unwrap();
        if i.send(&[]).is_ok() {
            let _ = i.recv(data);
        }
    }
});
