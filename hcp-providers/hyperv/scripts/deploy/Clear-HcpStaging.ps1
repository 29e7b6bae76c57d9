<#
.SYNOPSIS
    Removes a staging directory left behind by an interrupted upload, and creates it afresh.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidateLength(3, 240)][string]$StagingDir
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$removed = 0
if (Test-Path -LiteralPath $StagingDir) {
    $removed = @(Get-ChildItem -LiteralPath $StagingDir -Recurse -File).Count
    Remove-Item -LiteralPath $StagingDir -Recurse -Force
}
$null = New-Item -ItemType Directory -Path $StagingDir -Force
[ordered]@{ Removed = $removed }
