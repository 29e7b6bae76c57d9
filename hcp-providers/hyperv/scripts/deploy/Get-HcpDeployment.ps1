<#
.SYNOPSIS
    Reads the version marker of HCP's deployed scripts on this host ($null when none).
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidateLength(3, 200)][string]$ScriptDir
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$marker = Join-Path -Path $ScriptDir -ChildPath 'VERSION'
$version = $null
if (Test-Path -LiteralPath $marker -PathType Leaf) {
    $version = (Get-Content -LiteralPath $marker -Raw).Trim()
}
[ordered]@{ Version = $version }
