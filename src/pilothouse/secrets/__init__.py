"""The secrets broker (issue 6): encrypted values, grants per session, injection, redaction."""
