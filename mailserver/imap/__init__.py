"""IMAP4rev1 server (RFC 3501 + extensions).

Sans-I/O building blocks (owned by the parser engineer; the API below is
stable, additions only):

``receiver`` - bytes in, events out::

    r = CommandReceiver(max_line, max_literal)      # max_discard=... optional
    r.receive_data(data)
    ev = r.next_event()   # NEED_DATA | Continuation() | Request | Line | ProtocolError
    r.expect_line()       # next line comes back raw as Line(data) (AUTHENTICATE, IDLE DONE)
    r.buffered / r.max_buffer   # pause the transport while buffered > max_buffer

  ``r.max_literal`` may be changed between commands (e.g. small before login).
  Limits (see receiver's docstring): over-long lines are skipped to their LF
  (with a LITERAL+ literal that follows), too-big sync literals are refused
  without "+", too-big LITERAL+ literals are read and discarded; all give a
  non-fatal ProtocolError after the command ends, fatal only past max_discard.
  ``Continuation()``: send ``+ Ready`` (only for synchronizing literals).
  ``Request(tag, name, args, raw)``: ``name`` upper-case, ``"UID FETCH"`` for
  UID commands.  ``ProtocolError(tag|None, text, fatal, code, name)``: answer
  ``BAD`` (``NO [TOOBIG]`` when ``code == "TOOBIG"`` and the command is APPEND),
  ``* BAD`` when tag is None, ``* BYE`` + close when fatal.
  Tokens in ``args``: ``Atom`` (str subclass; ``.section``/``.prefix``/``.suffix``
  for ``BODY[...]<..>``), ``bytes`` (quoted), ``Literal`` (bytes subclass,
  ``.binary`` for ``~{n}``), ``list``, ``None`` (NIL).

``grammar`` - typed arguments from tokens; every parser raises
``GrammarError(text, code=None)`` (answer ``BAD``, or ``NO [BADCHARSET ...]``
when ``code`` starts with BADCHARSET)::

    astring(tok) -> bytes                 string(tok) -> bytes      number(tok) -> int
    mailbox_name(tok, utf8=False) -> str  (mUTF-7 / UTF-8 decoded, INBOX normalised)
    parse_sequence_set(str) -> SequenceSet
        .resolve_seqs(count, saved=None) -> list[int]   (SequenceError if out of range)
        .resolve_uids(uids_sorted, saved=None) -> list[int]
        .contains(n, star)                              .saved ($)
    parse_fetch_items(tok_or_list) -> list[FetchItem]   (macros expanded)
    parse_fetch_args(args) -> FetchArgs(sequence, items, changedsince)
    parse_store_args(args) -> StoreArgs(sequence, mode: FlagMode, silent, flags, unchanged_since)
    parse_store_action(tokens_after_seqset) -> StoreAction(mode, silent, flags, unchanged_since)
    parse_flag_list(tok) -> list[str]   (system flags canonical case)
    parse_search_args(args) -> SearchProgram(charset, key, return_opts)
    parse_search(tokens, charset="US-ASCII") -> SearchKey
    parse_date(tok) -> datetime.date      parse_date_time(tok) -> int (epoch)
    parse_append_args(args) -> AppendArgs(mailbox token, flags, date, message Literal)
    parse_status_items(tok) -> list[str]
    list_matcher(reference, pattern, delimiter="/") -> Callable[[str], bool]

``encoder`` - responses as bytes::

    tagged(tag, status, text, code=None)    untagged(text_or_bytes)
    untagged_status(status, text, code=None) continuation(text="Ready")
    fetch_response(seq, [(name_bytes, value_bytes), ...])
    astring / string / nstring / quoted / literal / encode_value / flag_list
    mailbox(name, utf8=False)   (mUTF-7 or UTF-8, quoted as needed)

``mutf7`` - ``encode(str) -> bytes``, ``decode(bytes|str) -> str`` (RFC 3501 5.1.3).

``fetch`` - FETCH rendering without reading whole blobs::

    sets_seen(items) -> bool          needs_content(items) -> bool
    plan_ranges(items, stored) -> list[(start, end)]   (merged blob ranges needed)
    await render_fetch(items, seq, record, stored|None, read_range, uid_mode,
                       flags=None) -> bytes       (the whole "* n FETCH (...)\\r\\n")
    envelope_to_imap(env) -> bytes    bodystructure(part, extensible) -> bytes
    format_internaldate(epoch) -> str

``search`` - ``await run_search(key, records, context, uid_mode) -> list[int]``
with ``StoreSearchContext(storage, mailbox_id, recent_uids, saved=None)`` or any
object implementing ``SearchContext``.
"""
