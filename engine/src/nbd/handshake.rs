//! Fixed newstyle handshake and option haggling.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::NbdError;
use super::wire::{self, *};
use crate::device::{ExportCatalog, ExportDevice};

/// The export a client chose; transmission starts next.
pub(crate) struct Negotiated<D> {
    /// Canonical export name (the default export's real name if the client sent "").
    pub name: String,
    pub device: Arc<D>,
}

/// Finds the export for `name`. The empty name is the default export, which
/// exists only when the catalog has exactly one export.
fn resolve<C: ExportCatalog>(catalog: &C, name: &str) -> Option<(String, Arc<C::Device>)> {
    if name.is_empty() {
        let mut names = catalog.names();
        if names.len() != 1 {
            return None;
        }
        let only = names.pop()?;
        let dev = catalog.lookup(&only)?;
        Some((only, dev))
    } else {
        catalog.lookup(name).map(|d| (name.to_owned(), d))
    }
}

/// Runs the server side of the fixed newstyle handshake. Returns the chosen
/// export when the client enters transmission, `None` when the client ended
/// the session cleanly (NBD_OPT_ABORT, or EOF between options), and an error
/// on a protocol violation or I/O failure.
pub(crate) async fn negotiate<R, W, C>(
    r: &mut R,
    w: &mut W,
    catalog: &C,
    peer: &str,
) -> Result<Option<Negotiated<C::Device>>, NbdError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    C: ExportCatalog,
{
    let mut greeting = [0u8; 18];
    greeting[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    greeting[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    greeting[16..18].copy_from_slice(&(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES).to_be_bytes());
    w.write_all(&greeting).await?;
    w.flush().await?;

    let client_flags = r.read_u32().await?;
    if client_flags & !KNOWN_CLIENT_FLAGS != 0 {
        return Err(NbdError::Protocol(format!(
            "unknown client flags {client_flags:#x}"
        )));
    }
    // A client without C_FIXED_NEWSTYLE is still served with fixed newstyle
    // replies (the spec allows it); such a client only sends EXPORT_NAME anyway.
    let no_zeroes = client_flags & NBD_FLAG_C_NO_ZEROES != 0;

    let mut data: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::with_capacity(256);
    loop {
        let mut hdr = [0u8; OPTION_HEADER_LEN];
        match r.read_exact(&mut hdr).await {
            Ok(_) => {}
            // The client may simply hang up between options (e.g. after LIST).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let h = match parse_option_header(&hdr) {
            Ok(h) => h,
            Err(e @ WireError::OptionTooLong { option, .. }) => {
                // Not read, not allocated: say why, then hang up (the payload
                // cannot be skipped cheaply and the spec allows a hard disconnect).
                out.clear();
                put_option_reply(
                    &mut out,
                    option,
                    NBD_REP_ERR_TOO_BIG,
                    e.to_string().as_bytes(),
                );
                let _ = w.write_all(&out).await;
                let _ = w.flush().await;
                return Err(NbdError::Protocol(e.to_string()));
            }
            Err(e) => return Err(NbdError::Protocol(format!("option header: {e}"))),
        };
        data.clear();
        data.resize(h.len as usize, 0);
        r.read_exact(&mut data).await?;
        out.clear();

        match h.option {
            NBD_OPT_EXPORT_NAME => {
                // This option cannot fail politely: an unknown export ends the session.
                let name = parse_export_name(&data)
                    .map_err(|e| NbdError::Protocol(format!("NBD_OPT_EXPORT_NAME: {e}")))?;
                let Some((name, device)) = resolve(catalog, &name) else {
                    tracing::debug!(peer, export = %name, "NBD_OPT_EXPORT_NAME for unknown export; closing");
                    return Err(NbdError::UnknownExport(name));
                };
                out.extend_from_slice(&device.size().to_be_bytes());
                out.extend_from_slice(&TRANSMISSION_FLAGS.to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                w.write_all(&out).await?;
                w.flush().await?;
                return Ok(Some(Negotiated { name, device }));
            }
            NBD_OPT_INFO | NBD_OPT_GO => {
                let go = h.option == NBD_OPT_GO;
                match parse_info_request(&data) {
                    Err(e) => {
                        tracing::warn!(peer, "malformed NBD_OPT_INFO/GO: {e}");
                        put_option_reply(
                            &mut out,
                            h.option,
                            NBD_REP_ERR_INVALID,
                            e.to_string().as_bytes(),
                        );
                    }
                    Ok(req) => match resolve(catalog, &req.name) {
                        None => {
                            let msg = format!("unknown export {:?}", req.name);
                            put_option_reply(
                                &mut out,
                                h.option,
                                NBD_REP_ERR_UNKNOWN,
                                msg.as_bytes(),
                            );
                        }
                        Some((name, device)) => {
                            put_option_reply(
                                &mut out,
                                h.option,
                                NBD_REP_INFO,
                                &info_export(device.size(), TRANSMISSION_FLAGS),
                            );
                            // Block sizes are always sent (the spec lets the server
                            // volunteer them); they are the protocol defaults except
                            // for the 32 MiB maximum, which clients use anyway.
                            put_option_reply(&mut out, h.option, NBD_REP_INFO, &info_block_size());
                            if req.requests.contains(&NBD_INFO_NAME) {
                                let mut info = Vec::with_capacity(2 + name.len());
                                info.extend_from_slice(&NBD_INFO_NAME.to_be_bytes());
                                info.extend_from_slice(name.as_bytes());
                                put_option_reply(&mut out, h.option, NBD_REP_INFO, &info);
                            }
                            put_option_reply(&mut out, h.option, NBD_REP_ACK, &[]);
                            w.write_all(&out).await?;
                            w.flush().await?;
                            if go {
                                return Ok(Some(Negotiated { name, device }));
                            }
                            continue;
                        }
                    },
                }
            }
            NBD_OPT_LIST => {
                if data.is_empty() {
                    for name in catalog.names() {
                        if name.len() > wire::MAX_STRING_LEN {
                            continue; // could not be selected anyway
                        }
                        let mut entry = Vec::with_capacity(4 + name.len());
                        entry.extend_from_slice(&(name.len() as u32).to_be_bytes());
                        entry.extend_from_slice(name.as_bytes());
                        put_option_reply(&mut out, h.option, NBD_REP_SERVER, &entry);
                    }
                    put_option_reply(&mut out, h.option, NBD_REP_ACK, &[]);
                } else {
                    put_option_reply(
                        &mut out,
                        h.option,
                        NBD_REP_ERR_INVALID,
                        b"NBD_OPT_LIST takes no data",
                    );
                }
            }
            NBD_OPT_ABORT => {
                put_option_reply(&mut out, h.option, NBD_REP_ACK, &[]);
                // The client may already have hung up; that is fine.
                let _ = w.write_all(&out).await;
                let _ = w.flush().await;
                return Ok(None);
            }
            NBD_OPT_STRUCTURED_REPLY => {
                // Simple replies only, for now.
                put_option_reply(
                    &mut out,
                    h.option,
                    NBD_REP_ERR_UNSUP,
                    b"structured replies not supported",
                );
            }
            NBD_OPT_STARTTLS => {
                put_option_reply(&mut out, h.option, NBD_REP_ERR_UNSUP, b"TLS not supported");
            }
            other => {
                tracing::debug!(peer, option = other, "unsupported NBD option");
                put_option_reply(&mut out, h.option, NBD_REP_ERR_UNSUP, &[]);
            }
        }
        w.write_all(&out).await?;
        w.flush().await?;
    }
}
