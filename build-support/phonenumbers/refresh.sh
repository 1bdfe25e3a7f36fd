#!/usr/bin/env bash
# Regenerates host/data/phonenumbers/ (timezones.txt, nanp_regions.txt, SOURCE) from a
# copy of google/libphonenumber, for `crate::domain::recipient_zone`.
#
# Usage: refresh.sh [--out DIR] LIBPHONENUMBER [REV]
#   LIBPHONENUMBER  a git checkout or a bare git dir of https://github.com/google/libphonenumber
#   REV             the commit to read (default HEAD). Files are read from that commit, not
#                   from the work tree, so SOURCE always names exactly what was copied.
#   --out DIR       where to write (default: host/data/phonenumbers next to this script's repo)
#
# Needs git and python3. Review the diff (and the warnings printed here) before committing;
# `cargo test recipient_zone` then checks every zone name still parses as a chrono-tz zone.
set -euo pipefail

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out_dir="$script_dir/../../host/data/phonenumbers"

usage() {
  sed -n '5,10p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

positional=()
while (($#)); do
  case "$1" in
    --out)
      (($# >= 2)) || usage
      out_dir=$2
      shift 2
      ;;
    -h | --help) usage ;;
    -*) usage ;;
    *)
      positional+=("$1")
      shift
      ;;
  esac
done
((${#positional[@]} >= 1 && ${#positional[@]} <= 2)) || usage
upstream=${positional[0]}
rev=${positional[1]:-HEAD}

git_upstream() { git -C "$upstream" "$@"; }

if ! git_upstream rev-parse --git-dir >/dev/null 2>&1; then
  echo "refresh.sh: $upstream is not a git checkout or git dir of libphonenumber" >&2
  exit 1
fi

commit=$(git_upstream rev-parse --verify "$rev^{commit}")
commit_date=$(git_upstream show -s --format=%cs "$commit")
timezones_path=resources/timezones/map_data.txt
geocoding_path=resources/geocoding/en/1.txt

mkdir -p "$out_dir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git_upstream show "$commit:$timezones_path" >"$work/timezones.txt"
git_upstream show "$commit:$geocoding_path" >"$work/geocoding-1.txt"

# The time-zone map is copied unchanged, licence header included.
cp "$work/timezones.txt" "$work/timezones.out"

python3 - "$work/geocoding-1.txt" "$work/nanp_regions.out" "$commit" "$commit_date" <<'PY'
"""Area code ("1NPA") -> ISO 3166-2 subdivision, from libphonenumber's NANP geocoding.

Rules, in order, per area code:
1. Its 4-digit entry names one state/province ("Florida", "Washington State",
   "Chicago, IL") -> that code.
2. Otherwise (no 4-digit entry, or one naming several provinces such as
   "Nova Scotia/Prince Edward Island"): its longer entries' ", XX" / ", State" suffixes.
   If they all agree -> that code for the area code. If they disagree -> one line per
   longer prefix that names a code (e.g. 1902... -> CA-NS or CA-PE); others stay unknown.
3. Still nothing -> the US territories table below (PR, GU, MP, AS, VI are absent or
   unnamed in the geocoding data).
Non-US/Canadian NANP members (Jamaica, Bahamas, ...) get no line: they have no
ISO 3166-2 subdivision of a country whose rules Herald models.
"""
import sys

geocoding_file, out_file, commit, commit_date = sys.argv[1:5]

US = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "Washington D.C.",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois",
    "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan",
    "MN": "Minnesota", "MS": "Mississippi", "MO": "Missouri", "MT": "Montana",
    "NE": "Nebraska", "NV": "Nevada", "NH": "New Hampshire", "NJ": "New Jersey",
    "NM": "New Mexico", "NY": "New York", "NC": "North Carolina", "ND": "North Dakota",
    "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania",
    "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota", "TN": "Tennessee",
    "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia", "WA": "Washington",
    "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
    # Territories: ISO 3166-2:US lists them as US-PR etc. (they also have ISO 3166-1 codes).
    "PR": "Puerto Rico", "VI": "U.S. Virgin Islands", "GU": "Guam",
    "MP": "Northern Mariana Islands", "AS": "American Samoa",
}
CA = {
    "AB": "Alberta", "BC": "British Columbia", "MB": "Manitoba", "NB": "New Brunswick",
    "NL": "Newfoundland and Labrador", "NS": "Nova Scotia", "NT": "Northwest Territories",
    "NU": "Nunavut", "ON": "Ontario", "PE": "Prince Edward Island", "QC": "Quebec",
    "SK": "Saskatchewan", "YT": "Yukon",
}
BY_NAME = {}
BY_POSTAL = {}
for country, table in (("US", US), ("CA", CA)):
    for postal, name in table.items():
        BY_NAME[name.lower()] = f"{country}-{postal}"
        BY_POSTAL[postal] = f"{country}-{postal}"
# Spellings the geocoding data uses besides the plain names.
BY_NAME.update({
    "washington state": "US-WA",  # plain "Washington" could be the city
    "washington dc": "US-DC",
    "district of columbia": "US-DC",
    "british colombia": "CA-BC",  # sic, 1257
    "newfoundland": "CA-NL",
    "virgin islands": "US-VI",
    "us virgin islands": "US-VI",
})
del BY_NAME["washington"]

# Area codes the geocoding data leaves unnamed (or names only by town).
TERRITORIES = {
    "1340": "US-VI", "1670": "US-MP", "1671": "US-GU", "1684": "US-AS",
    "1787": "US-PR", "1939": "US-PR",
}


def code_of(description):
    """ISO 3166-2 code of a whole description or of its ", XX" suffix; None if it names none."""
    description = description.strip()
    whole = BY_NAME.get(description.lower())
    if whole:
        return whole
    if ", " in description:
        suffix = description.rsplit(", ", 1)[1].strip()
        return BY_POSTAL.get(suffix) or BY_NAME.get(suffix.lower())
    return None


area_names = {}  # "1NPA" -> description of the 4-digit entry
longer = {}  # "1NPA" -> [(prefix, description)]
with open(geocoding_file, encoding="utf-8") as f:
    for line in f:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        prefix, _, description = line.partition("|")
        if not prefix.isdigit() or not prefix.startswith("1") or len(prefix) < 4:
            print(f"warning: skipping odd geocoding line {line!r}", file=sys.stderr)
            continue
        if len(prefix) == 4:
            area_names[prefix] = description
        else:
            longer.setdefault(prefix[:4], []).append((prefix, description))

lines = []  # (prefix, code)
unnamed = []
for area in sorted(set(area_names) | set(longer) | set(TERRITORIES)):
    by_area = code_of(area_names.get(area, ""))
    exchange_codes = [(p, code_of(d)) for p, d in longer.get(area, [])]
    exchange_codes = [(p, c) for p, c in exchange_codes if c]
    agreeing = {c for _, c in exchange_codes}
    if by_area:
        lines.append((area, by_area))
        others = agreeing - {by_area}
        if others:
            print(f"warning: {area} is {by_area} but some exchanges say {sorted(others)}", file=sys.stderr)
    elif len(agreeing) == 1:
        lines.append((area, agreeing.pop()))
    elif len(agreeing) > 1:
        lines.extend(exchange_codes)
        print(f"note: {area} spans {sorted(agreeing)}: {len(exchange_codes)} exchange lines", file=sys.stderr)
    elif area in TERRITORIES:
        lines.append((area, TERRITORIES[area]))
    else:
        unnamed.append(area)
for area, code in TERRITORIES.items():
    found = [c for p, c in lines if p[:4] == area]
    if found and set(found) != {code}:
        print(f"warning: territory {area} derived as {sorted(set(found))}, table says {code}", file=sys.stderr)

if unnamed:
    print(f"note: no region for {len(unnamed)} area codes (non-US/CA members): {' '.join(unnamed)}",
          file=sys.stderr)

with open(out_file, "w", encoding="utf-8") as out:
    out.write(f"""# NANP prefix -> ISO 3166-2 subdivision (US-xx incl. US-DC/PR/VI/GU/MP/AS, CA-xx).
# Derived by build-support/phonenumbers/refresh.sh from libphonenumber
# resources/geocoding/en/1.txt at {commit} ({commit_date}),
# Copyright (C) 2011 The Libphonenumber Authors, Apache License 2.0
# (http://www.apache.org/licenses/LICENSE-2.0). Do not edit: rerun the script.
# Longest prefix wins; 4-digit lines are area codes, longer ones split an area code
# that spans several provinces. Non-US/Canadian NANP members have no line.
""")
    for prefix, code in sorted(lines):
        out.write(f"{prefix}|{code}\n")
print(f"nanp_regions.txt: {len(lines)} lines", file=sys.stderr)
PY

cat >"$work/SOURCE" <<EOF
# Provenance of the files in this directory. Regenerated by build-support/phonenumbers/refresh.sh;
# crate::domain::recipient_zone reads the commit and date lines for data_version().
upstream: https://github.com/google/libphonenumber
commit: $commit
date: $commit_date
licence: Apache-2.0 (Copyright (C) The Libphonenumber Authors; http://www.apache.org/licenses/LICENSE-2.0)
timezones.txt: $timezones_path, unchanged
nanp_regions.txt: derived from $geocoding_path (state/province names -> ISO 3166-2 codes)
EOF

mv "$work/timezones.out" "$out_dir/timezones.txt"
mv "$work/nanp_regions.out" "$out_dir/nanp_regions.txt"
mv "$work/SOURCE" "$out_dir/SOURCE"
echo "wrote $out_dir (libphonenumber ${commit:0:7}, $commit_date)" >&2
