<#
.SYNOPSIS
    Reads a guest's setup completion signal (a guest-to-host KVP item) and, once it is there or
    when asked to finish, detaches and deletes the VM's answer-file ISO.
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9][A-Za-z0-9-]{0,127}$')][string]$VmId,
    [ValidatePattern('^$|^[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$')][string]$NativeId,
    [Parameter(Mandatory)][ValidatePattern('^[A-Za-z0-9]{1,64}$')][string]$Key,
    [bool]$Finish,
    [bool]$Cluster
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
Import-Module -Name (Join-Path -Path $PSScriptRoot -ChildPath 'HcpCommon.psm1') -Force

$vm = Get-HcpVmOrThrow -VmId $VmId -NativeId $NativeId -Cluster $Cluster
$value = $null
$system = Get-CimInstance -Namespace 'root\virtualization\v2' -ClassName 'Msvm_ComputerSystem' -Filter "Name='$($vm.Id)'"
$exchange = Get-CimAssociatedInstance -InputObject $system -ResultClassName 'Msvm_KvpExchangeComponent'
foreach ($item in @($exchange.GuestExchangeItems | Where-Object { $_ })) {
    $doc = [xml]$item
    $name = ($doc.INSTANCE.PROPERTY | Where-Object { $_.NAME -eq 'Name' }).VALUE
    if ($name -eq $Key) {
        $value = ($doc.INSTANCE.PROPERTY | Where-Object { $_.NAME -eq 'Data' }).VALUE
    }
}
$done = $null -ne $value
$removed = 0
if ($done -or $Finish) {
    foreach ($drive in @(Get-VMDvdDrive -VM $vm | Where-Object { $_.Path -and $_.Path.EndsWith('-unattend.iso') })) {
        $path = $drive.Path
        Remove-VMDvdDrive -VMDvdDrive $drive
        Remove-Item -LiteralPath $path -Force
        $removed++
    }
}
[ordered]@{ Done = $done; Value = $value; MediaRemoved = $removed }
