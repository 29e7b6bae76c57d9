<#
.SYNOPSIS
    Writes one base64 chunk of an uploaded file at Offset into a ".part" file in the staging
    directory (Offset 0 starts the file afresh).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('\.part$')][string]$Path,
    [Parameter(Mandatory)][ValidateRange(0, 2147483647)][int64]$Offset,
    [Parameter(Mandatory)][string]$Data
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$bytes = [System.Convert]::FromBase64String($Data)
$mode = [System.IO.FileMode]::OpenOrCreate
if ($Offset -eq 0) {
    $mode = [System.IO.FileMode]::Create
    $null = New-Item -ItemType Directory -Path (Split-Path -Path $Path -Parent) -Force
}
$stream = New-Object System.IO.FileStream -ArgumentList $Path, $mode, ([System.IO.FileAccess]::Write)
try {
    if ($stream.Length -ne $Offset) {
        $exception = New-Object System.ArgumentException -ArgumentList "Chunk offset $Offset does not match the length $($stream.Length) of '$Path'."
        throw (New-Object System.Management.Automation.ErrorRecord -ArgumentList $exception, 'ChunkOffsetMismatch', ([System.Management.Automation.ErrorCategory]::InvalidArgument), $Path)
    }
    $null = $stream.Seek($Offset, [System.IO.SeekOrigin]::Begin)
    $stream.Write($bytes, 0, $bytes.Length)
    $length = $stream.Length
}
finally {
    $stream.Dispose()
}
[ordered]@{ Length = $length }
