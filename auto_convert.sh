# Prepare a MindSpore environment for the msmm suites:
#
#   source auto_convert.sh mm [SRC ...]
#
# - makes msmm importable in the active python (pip install -e . when it is not),
# - pre-converts msmm.models into the import-hook cache
#   ($MSMM_AUTO_CONVERT_CACHE, default ~/.cache/msmm/auto_convert),
# - converts each SRC (file or tree) into a copy beside it, SRC_ms,
#   with SRC_ms/auto_convert_report.json,
# - exports PYTHONPATH, MSMM_AUTO_CONVERT=1 and MindSpore logging defaults.
#
# A script that imports msmm.models then calls msmm.runtime.start() first (device, inline host
# pipeline, and the import hook for msmm.models and MSMM_AUTO_CONVERT_PACKAGES).
#
# Sourcing it again is harmless. On an error it reports and returns non-zero; it never
# exits the calling shell. Set MSMM_PYTHON to choose the interpreter (default: python).

_msmm_auto_convert() {
    local suite="$1"
    if [ "$#" -gt 0 ]; then shift; fi
    if [ "$suite" != "mm" ]; then
        echo "auto_convert.sh: usage: source auto_convert.sh mm [SRC ...] (got '${suite}')" >&2
        return 2
    fi

    local root
    root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)" || return 1
    local py="${MSMM_PYTHON:-python}"
    if ! command -v "$py" >/dev/null 2>&1; then
        py=python3
    fi
    if ! command -v "$py" >/dev/null 2>&1; then
        echo "auto_convert.sh: no python on PATH; activate your environment first" >&2
        return 1
    fi

    if ! "$py" -c "import msmm, auto_convert, adapters" >/dev/null 2>&1; then
        echo "auto_convert.sh: msmm is not importable by $(command -v "$py"); installing ${root}"
        if ! "$py" -m pip install -q -e "$root"; then
            echo "auto_convert.sh: 'pip install -e ${root}' failed" >&2
            return 1
        fi
    fi

    case ":${PYTHONPATH:-}:" in
        *":${root}:"*) ;;
        *) export PYTHONPATH="${root}${PYTHONPATH:+:${PYTHONPATH}}" ;;
    esac
    export MSMM_AUTO_CONVERT=1
    export MSMM_AUTO_CONVERT_CACHE="${MSMM_AUTO_CONVERT_CACHE:-${HOME}/.cache/msmm/auto_convert}"
    export GLOG_v="${GLOG_v:-2}"  # MindSpore: warnings and errors
    export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"

    if ! "$py" -m auto_convert --package msmm.models --quiet --allow-partial; then
        echo "auto_convert.sh: converting msmm.models failed" >&2
        return 1
    fi

    local src dst status=0
    for src in "$@"; do
        src="${src%/}"
        if [ -d "$src" ]; then
            dst="${src}_ms"  # a tree: tree_ms/ with its report inside
        elif [ -f "$src" ]; then
            case "$(basename "$src")" in  # a file: name_ms.ext beside it
                *.*) dst="${src%.*}_ms.${src##*.}" ;;
                *) dst="${src}_ms" ;;
            esac
        else
            echo "auto_convert.sh: ${src}: no such file or directory" >&2
            status=1
            continue
        fi
        if ! "$py" -m auto_convert "$src" "$dst" --quiet; then
            echo "auto_convert.sh: ${src} -> ${dst}: constructs left unconverted (or an error);" \
                 "see auto_convert_summary.txt beside the report" >&2
            status=1
        fi
    done

    echo "auto_convert.sh: ready (python: $(command -v "$py"), cache: ${MSMM_AUTO_CONVERT_CACHE}," \
         "MSMM_AUTO_CONVERT=1)"
    return "$status"
}

if [ "${BASH_SOURCE[0]:-}" = "${0}" ]; then
    echo "auto_convert.sh: run it as 'source auto_convert.sh mm' so the exports stay in your shell" >&2
    _msmm_auto_convert "$@"
    exit $?
fi
_msmm_auto_convert "$@"
