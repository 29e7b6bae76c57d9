<#
.SYNOPSIS
    Checks an uploaded ".part" file against its SHA-256 and renames it into place; a mismatch
    deletes the part file and fails.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('\.part$')][string]$PartPath,
    [Parameter(Mandatory)][ValidateLength(3, 260)][string]$Path,
    [Parameter(Mandatory)][ValidatePattern('^[0-9A-Fa-f]{64}$')][string]$Sha256
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$digest = (Get-FileHash -LiteralPath $PartPath -Algorithm SHA256).Hash
if ($digest -ne $Sha256.ToUpperInvariant()) {
    Remove-Item -LiteralPath $PartPath -Force
    $exception = New-Object System.IO.InvalidDataException -ArgumentList "Checksum mismatch for '$Path': expected $($Sha256.ToUpperInvariant()), got $digest."
    throw (New-Object System.Management.Automation.ErrorRecord -ArgumentList $exception, 'ChecksumMismatch', ([System.Management.Automation.ErrorCategory]::InvalidData), $Path)
}
Move-Item -LiteralPath $PartPath -Destination $Path -Force
[ordered]@{ Sha256 = $digest }
