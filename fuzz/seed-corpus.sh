#!/bin/sh
# Seed fuzz/corpus/<target>/ from ../protocol-fixtures (real distcc 3.4 byte
# streams). Request and reply seeds start with the control byte the target
# reads first: request_decoder takes (read size - 1); reply_decoder takes the
# requested version in its low 2 bits (0 = v1, 1 = v2, 3 = v3) and
# (read size - 1) in the upper 6. lzo_decompress gets every LZO body of the
# protocol 2 fixtures.
set -eu
cd "$(dirname "$0")"
fixtures=../protocol-fixtures
mkdir -p corpus/request_decoder corpus/reply_decoder corpus/lzo_decompress
# Seeds over 20 kB slow libFuzzer down more than they teach it.
small() { [ "$(wc -c < "$1")" -lt 20000 ]; }
for f in "$fixtures"/*.c2s.bin; do
    [ -s "$f" ] && small "$f" || continue
    n=$(basename "$f" .c2s.bin)
    { printf '\377'; cat "$f"; } > "corpus/request_decoder/$n-whole"
    { printf '\000'; cat "$f"; } > "corpus/request_decoder/$n-bytewise"
done
for f in "$fixtures"/*.s2c.bin; do
    [ -s "$f" ] && small "$f" || continue
    n=$(basename "$f" .s2c.bin)
    case "$n" in proto2-*) control='\375' ;; *) control='\374' ;; esac
    { printf "$control"; cat "$f"; } > "corpus/reply_decoder/$n"
done
python3 - "$fixtures" <<'PY'
import glob, os, sys
for path in sorted(glob.glob(os.path.join(sys.argv[1], 'proto2-*.bin'))):
    data, off, i = open(path, 'rb').read(), 0, 0
    while off + 12 <= len(data):
        token, value = data[off:off + 4], int(data[off + 4:off + 12], 16)
        off += 12
        if token in (b'ARGV', b'DOTI', b'SERR', b'SOUT', b'DOTO'):
            body, off = data[off:off + value], off + value
            if token != b'ARGV' and 0 < value < 20000:
                name = 'corpus/lzo_decompress/%s-%d' % (os.path.basename(path), i)
                open(name, 'wb').write(body)
                i += 1
PY
# lzo_stream: the same bodies behind (piece size, output room) control bytes.
mkdir -p corpus/lzo_stream
for f in corpus/lzo_decompress/*; do
    n=$(basename "$f")
    { printf '\001\000'; cat "$f"; } > "corpus/lzo_stream/$n-bytewise"
    { printf '\377\377'; cat "$f"; } > "corpus/lzo_stream/$n-large"
done
for t in request_decoder reply_decoder lzo_decompress lzo_stream; do
    echo "$t: $(ls corpus/$t | wc -l) seeds"
done
